"""`python -m lm1b.score`: runs lm1b.commands.score."""

from lm1b.commands.score import main

if __name__ == "__main__":
    main()
