"""``python -m bench``: every benchmark that exists so far, as markdown tables."""

import logging

import structlog

from bench import log, records

if __name__ == "__main__":
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    records.main()
    log.main()
