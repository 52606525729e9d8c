from . import demo  # noqa
