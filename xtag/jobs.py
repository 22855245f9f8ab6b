"""Where jobs queued before the pipeline package existed find their functions
(RQ imports a job's function by its dotted name): keep until no such job can
be waiting, i.e. one release after a deploy whose retries have all run."""

from xtag.pipeline.jobs import deliver_pixel, retry_delivery

__all__ = ["deliver_pixel", "retry_delivery"]
