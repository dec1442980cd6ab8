"""``python -m genscom ...``: the ``genscom`` command (also under ``accelerate launch -m genscom``)."""

from genscom.cli import main

if __name__ == "__main__":
    main()
