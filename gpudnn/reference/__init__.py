"""The NumPy reference backend: forward and backward of every op, backprop written out by hand.

No torch in here. One module per op family with the launcher names of ``gpudnn.launchers``; the
oracle every kernel is compared against.
"""
