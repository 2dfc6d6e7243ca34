"""`python -m conveyor_client.cli`: the `conveyorctl` command."""

from conveyor_client.cli import main

main()
