"""Former home of :class:`~vit5.modules.resampled_kernel.ResampledSIRENKernelND`, re-exported.

The module now lives in :mod:`vit5.modules.resampled_kernel`. This path stays importable because
saved configs may name ``vit5.networks.resampled_kernel.ResampledSIRENKernelND`` as ``__target__``.
"""

from vit5.modules.resampled_kernel import ResampledSIRENKernelND

__all__ = ["ResampledSIRENKernelND"]
