"""`python -m lm1b.train`: runs lm1b.commands.train."""

from lm1b.commands.train import main

if __name__ == "__main__":
    main()
