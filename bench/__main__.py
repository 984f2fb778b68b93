"""``python -m bench``: every benchmark that exists so far, as markdown tables."""

from bench import records

if __name__ == "__main__":
    records.main()
