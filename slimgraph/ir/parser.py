"""In progress."""
def parse(text, payloads=None, source=None): raise NotImplementedError
