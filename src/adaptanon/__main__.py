"""``python -m adaptanon``: the command line, as the ``adaptanon`` script."""

from adaptanon.cli import main

if __name__ == "__main__":
    main()
