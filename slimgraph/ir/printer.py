"""In progress."""
def print_graph(g, inline_limit=16): return repr(g)
