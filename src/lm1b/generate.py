"""`python -m lm1b.generate`: runs lm1b.commands.generate."""

from lm1b.commands.generate import main

if __name__ == "__main__":
    main()
