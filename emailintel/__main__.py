from emailintel.cli import main

raise SystemExit(main())
