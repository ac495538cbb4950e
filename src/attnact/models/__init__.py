"""Host networks for the papers' experiments, a registry of them, and parameter/MAC profiling.

Hosts: ``resnet_cifar`` (ATAC paper Table II, ResNet-v2 with b blocks per stage, and the
comparison variants NiN / LocalSE / SE / GE), ``resnet50_v1b`` (ATAC paper Table IV) and
``mnist_conv`` (AReLU paper Sec. 4.1). Every host builds its activations through an
:class:`~attnact.models.act_plan.ActPlan` and lists them in ``model.act_sites``.

Module names: ``mnist.py`` rather than ``mnist_conv.py`` so that the builder
``attnact.models.mnist_conv`` does not shadow its own module.
"""

from attnact.models import cifar_resnet, cifar_zoo, imagenet_resnet, mnist  # noqa: F401  (registration)
from attnact.models.act_plan import ORDERS, ActPlan, ActSite
from attnact.models.cifar_resnet import VARIANTS, ResNetCifar, resnet_cifar
from attnact.models.imagenet_resnet import ResNetV1b, resnet50_v1b
from attnact.models.mnist import MNISTConv, mnist_conv
from attnact.models.profile import (
    LayerProfile,
    count_macs,
    count_parameters,
    info_report,
    profile_table_markdown,
)
from attnact.models.registry import (
    ModelSpec,
    create_model,
    fit_to_input,
    list_models,
    model_spec,
    register_model,
)

__all__ = [
    "ORDERS",
    "VARIANTS",
    "ActPlan",
    "ActSite",
    "LayerProfile",
    "MNISTConv",
    "ModelSpec",
    "ResNetCifar",
    "ResNetV1b",
    "count_macs",
    "count_parameters",
    "create_model",
    "fit_to_input",
    "info_report",
    "list_models",
    "mnist_conv",
    "model_spec",
    "profile_table_markdown",
    "register_model",
    "resnet50_v1b",
    "resnet_cifar",
]
