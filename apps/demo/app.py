"""Combined demo page (transmitter + receiver): `python apps/demo/app.py [--port 7860] [--profile mini]`."""
import sys

from genscom.demo.__main__ import main

if __name__ == "__main__":
    sys.exit(main(["combined", *sys.argv[1:]]))
