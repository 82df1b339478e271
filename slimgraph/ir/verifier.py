"""In progress."""
def verify(g): pass
