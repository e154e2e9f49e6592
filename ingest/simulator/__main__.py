"""`python -m ingest.simulator DIR ...`"""
import sys

from .api import main

sys.exit(main())
