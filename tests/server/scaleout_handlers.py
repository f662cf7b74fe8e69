"""The job kinds for the scale-out lab test, loaded by real ``bavlio worker`` processes
(``BAVLIO_JOB_HANDLERS=scaleout_handlers:register``): the deployment's own kinds and credit
hook, with a prober whose politeness suits a loopback lab (the defaults suit the internet)."""

from __future__ import annotations

from emailintel.smtp.politeness import PolitenessConfig
from emailintel.smtp.prober import Prober
from emailintel.smtp.session import Timeouts
from server.jobs.kinds import register_with
from server.jobs.queue import JobQueue
from server.services import Services
from server.settings import Settings


def register(queue: JobQueue, settings: Settings) -> None:
    """Every kind and the credit hook, probing with lab politeness (identity from the env)."""
    prober = Prober(
        politeness=PolitenessConfig.unlimited(), timeouts=Timeouts(connect=5, banner=10, command=10)
    )
    register_with(queue, Services.build(settings, prober=prober))
