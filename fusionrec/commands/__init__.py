"""Commands of the `fusionrec` CLI that live outside cli.py (registered there with ``cli.add_command``)."""
