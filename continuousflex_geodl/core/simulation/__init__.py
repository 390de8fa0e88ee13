"""Parts of the synthetic data sets of ``core.simulate``.

``motion``      conformational motions with known coordinates (hinge, linear, nma);
``population``  laws over the motion's unit coordinates;
``imaging``     random poses and CTFs, clean rendered images.
"""
