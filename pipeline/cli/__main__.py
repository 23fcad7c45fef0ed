"""`python -m pipeline.cli ...` is the `lmpipe` command."""

from pipeline.cli.main import main

main()
