"""The one error type for bad input: the CLI turns it into one line and exit status 2."""


class InputError(ValueError):
  """Bad input from the user: the message names the value and what would be right."""
