"""A sequencer process for the kill -9 test: ticks on the database named by its arguments
(URL, schema or ""), with the test identities, until killed or until ``stop_file`` exists."""

from __future__ import annotations

import asyncio
import os
import sys

from sequencer_support import Clock, sequencer

from server.db.engine import Database


def _stopped(stop_file: str) -> bool:
    return os.path.exists(stop_file)


async def main(url: str, schema: str, stop_file: str) -> None:
    """Tick as fast as possible on the real clock."""
    import time

    db = Database(url, schema=schema or None)
    clock = Clock(time.time())
    seq = sequencer(db, clock, batch=50)
    try:
        while not _stopped(stop_file):
            clock.now = time.time()
            await seq.tick()
            await asyncio.sleep(0.005)
    finally:
        await db.dispose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
