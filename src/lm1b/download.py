"""`python -m lm1b.download`: runs lm1b.commands.download."""

from lm1b.commands.download import main

if __name__ == "__main__":
    main()
