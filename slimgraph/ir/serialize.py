"""In progress."""
def load(path): raise NotImplementedError
def save(g, path): raise NotImplementedError
