"""`python -m pipeline.cli ...` is the `lmpipe` command."""

import sys

from pipeline.cli.main import main

main(sys.argv[1:])
