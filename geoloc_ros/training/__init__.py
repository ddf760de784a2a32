"""Training and evaluation of the cross-view model (torch)."""
