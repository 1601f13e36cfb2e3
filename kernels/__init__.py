"""Raw GPU kernels and their launchers (installed as ``gpudnn.kernels``).

``triton/`` and ``cupy/`` expose the same launcher names as ``gpudnn.reference``; nothing here
knows about autograd or modules.
"""
