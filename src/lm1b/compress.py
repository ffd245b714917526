"""`python -m lm1b.compress`: runs lm1b.commands.compress."""

from lm1b.commands.compress import main

if __name__ == "__main__":
    main()
