#!/usr/bin/env python
"""MAP's ``mapshell.py``: a thin wrapper around the ``mapshell`` console command."""

import sys

from pipeline.shell import main

if __name__ == "__main__":
    sys.exit(main())
