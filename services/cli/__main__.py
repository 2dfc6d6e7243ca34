"""`python -m services.cli`: the `conveyor` command."""

from services.cli.main import main

main()
