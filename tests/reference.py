"""torchvision 0.29.1's published figures (weights.meta num_params and _ops, GFLOPS at 224x224
unless noted).

Copied from ../shared/reference/torchvision.md so the suite does not depend on files outside
the repository. These are the reference implementation's numbers, not archc's output.
"""

TORCHVISION = {
    "resnet18": (11_689_512, 1.814),
    "resnet34": (21_797_672, 3.664),
    "resnet50": (25_557_032, 4.089),
    "resnet101": (44_549_160, 7.801),
    "resnet152": (60_192_808, 11.514),
    "resnext50_32x4d": (25_028_904, 4.23),
    "resnext101_32x8d": (88_791_336, 16.414),
    "wide_resnet50_2": (68_883_240, 11.398),
    "resnext101_64x4d": (83_455_272, 15.46),
    "wide_resnet101_2": (126_886_696, 22.753),
    "alexnet": (61_100_840, 0.714),
    "vgg11": (132_863_336, 7.609),
    "vgg16": (138_357_544, 15.47),
    "vgg16_bn": (138_365_992, 15.47),
    "vgg19_bn": (143_678_248, 19.632),
    # the rest of the VGG family, from the weights' meta in torchvision/models/vgg.py
    "vgg11_bn": (132_868_840, 7.609),
    "vgg13": (133_047_848, 11.308),
    "vgg13_bn": (133_053_736, 11.308),
    "vgg19": (143_667_240, 19.632),
    "googlenet": (6_624_904, 1.498),
    "densenet121": (7_978_856, 2.834),
    "densenet161": (28_681_000, 7.728),
    "densenet169": (14_149_480, 3.36),
    "densenet201": (20_013_928, 4.291),
    # the efficient families (issue 13), from the weights' meta in torchvision/models/
    "mobilenet_v2": (3_504_872, 0.301),
    "mobilenet_v3_large": (5_483_032, 0.217),
    "mobilenet_v3_small": (2_542_856, 0.057),
    "mnasnet0_5": (2_218_512, 0.104),
    "mnasnet0_75": (3_170_208, 0.215),
    "mnasnet1_0": (4_383_312, 0.314),
    "mnasnet1_3": (6_282_256, 0.526),
    # EfficientNet, from the weights' meta in torchvision/models/efficientnet.py (GFLOPS at each
    # weight's crop size: 224, 240, 288, 300, 380, 456, 528, 600; V2: 384, 480, 480)
    "efficientnet_b0": (5_288_548, 0.386),
    "efficientnet_b1": (7_794_184, 0.687),
    "efficientnet_b2": (9_109_994, 1.088),
    "efficientnet_b3": (12_233_232, 1.827),
    "efficientnet_b4": (19_341_616, 4.394),
    "efficientnet_b5": (30_389_784, 10.266),
    "efficientnet_b6": (43_040_704, 19.068),
    "efficientnet_b7": (66_347_960, 37.746),
    "efficientnet_v2_s": (21_458_488, 8.366),
    "efficientnet_v2_m": (54_139_356, 24.582),
    "efficientnet_v2_l": (118_515_272, 56.08),
    # ShuffleNet V2, from the weights' meta in torchvision/models/shufflenetv2.py (num_params,
    # _ops in GFLOPS, given to 3 decimals)
    "shufflenet_v2_x0_5": (1_366_792, 0.04),
    "shufflenet_v2_x1_0": (2_278_604, 0.145),
    "shufflenet_v2_x1_5": (3_503_624, 0.296),
    "shufflenet_v2_x2_0": (7_393_996, 0.583),
    # ConvNeXt, from the weights' meta in torchvision/models/convnext.py
    "convnext_tiny": (28_589_128, 4.456),
    "convnext_small": (50_223_688, 8.684),
    "convnext_base": (88_591_464, 15.355),
    "convnext_large": (197_767_336, 34.361),
    # RegNet, from the weights' meta in torchvision/models/regnet.py (GFLOPS at 224; for
    # regnet_y_128gf, which has only SWAG weights, IMAGENET1K_SWAG_LINEAR_V1's at 224)
    "regnet_y_400mf": (4_344_144, 0.402),
    "regnet_y_800mf": (6_432_512, 0.834),
    "regnet_y_1_6gf": (11_202_430, 1.612),
    "regnet_y_3_2gf": (19_436_338, 3.176),
    "regnet_y_8gf": (39_381_472, 8.473),
    "regnet_y_16gf": (83_590_140, 15.912),
    "regnet_y_32gf": (145_046_770, 32.28),
    "regnet_y_128gf": (644_812_894, 127.518),
    "regnet_x_400mf": (5_495_976, 0.414),
    "regnet_x_800mf": (7_259_656, 0.8),
    "regnet_x_1_6gf": (9_190_136, 1.603),
    "regnet_x_3_2gf": (15_296_552, 3.177),
    "regnet_x_8gf": (39_572_648, 7.995),
    "regnet_x_16gf": (54_278_536, 15.941),
    "regnet_x_32gf": (107_811_560, 31.736),
    # SqueezeNet and Inception v3 (GFLOPS at 299x299), from the weights' meta in
    # torchvision/models/squeezenet.py and inception.py
    "squeezenet1_0": (1_248_424, 0.819),
    "squeezenet1_1": (1_235_496, 0.349),
    "inception_v3": (27_161_264, 5.713),
}

# googlenet's weights are published without its auxiliary heads (the builder drops them after
# loading unless aux_logits=True is asked for), so its meta num_params counts the eval network
# only; the default builder, weights=None, has both heads. Inception v3's meta counts AuxLogits.
META_WITHOUT_HEADS = {"googlenet"}
DEFAULT_BUILDER_PARAMS = {"googlenet": 13_004_888}  # sum(p.numel()) of googlenet(weights=None)

