"""`python -m lm1b.evaluate`: runs lm1b.commands.evaluate."""

from lm1b.commands.evaluate import main

if __name__ == "__main__":
    main()
