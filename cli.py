#!/usr/bin/env python
"""Entry point: `python cli.py COMMAND ...` runs the same commands as `keras-sns COMMAND`."""

from keras_sns.cli import main

if __name__ == "__main__":
    main()
