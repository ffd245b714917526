"""`python -m lm1b.summary`: runs lm1b.commands.summary."""

from lm1b.commands.summary import main

if __name__ == "__main__":
    main()
