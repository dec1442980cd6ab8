"""Transmitter process: `python apps/demo/tx.py --rx-url http://127.0.0.1:7861 [--port 7860]`."""
import sys

from genscom.demo.__main__ import main

if __name__ == "__main__":
    sys.exit(main(["tx", *sys.argv[1:]]))
