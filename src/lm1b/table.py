"""`python -m lm1b.table`: runs lm1b.commands.table."""

from lm1b.commands.table import main

if __name__ == "__main__":
    main()
