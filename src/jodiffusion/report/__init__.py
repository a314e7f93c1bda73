"""The demo's report folder: PNG figures (``figures``) and a self-contained ``index.html`` (``html``).

Imports are left to the submodules so that ``jodiffusion.report.html`` does not pull in torch.
"""
