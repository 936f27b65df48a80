"""The paper's numbers and the package-wide defaults, in one place.

Every default that more than one module needs lives here; configuration dataclasses (`ptx_keras.config`)
and function signatures refer to these names instead of repeating literals.
"""

__all__ = [
    "BETA_1",
    "BETA_2",
    "BOUNDARY_WIDTH",
    "CROP_FOREGROUND",
    "DEEPLAB_ASPP_FILTERS",
    "DEEPLAB_ASPP_RATES",
    "DEEPLAB_BACKBONE",
    "DEEPLAB_DROPOUT_RATES",
    "DEEPLAB_LOW_LEVEL_FILTERS",
    "DEEPLAB_OUTPUT_STRIDE",
    "DENSEASPP_BACKBONE",
    "DENSEASPP_DROPOUT_RATE",
    "DENSEASPP_OUTPUT_STRIDE",
    "DENSEASPP_RATES",
    "DIAGNOSIS_KEYS",
    "DIAGNOSIS_MIN_AREA",
    "DIAGNOSIS_REFERENCE_SIZE",
    "DICE_SMOOTH",
    "DROPOUT_RATE",
    "EARLY_STOPPING_PATIENCE",
    "EPOCHS",
    "EVAL_CASES_PER_SIZE",
    "EXPORT_FORMATS",
    "FCDENSENET56_LAYERS",
    "FCDENSENET67_GROWTH_RATE",
    "FCDENSENET67_LAYERS",
    "FCDENSENET103_LAYERS",
    "FCDENSENET_NUM_POOLS",
    "FIRST_CONV_FILTERS",
    "GROWTH_RATE",
    "IMAGE_BIT_DEPTH",
    "IMAGE_SIZE",
    "LEARNING_RATE",
    "LOSS_EPSILON",
    "MASK_THRESHOLD",
    "MULTISCALE_FILTERS_PER_BRANCH",
    "MULTISCALE_KERNEL_SIZES",
    "NUM_CLASSES",
    "PAPER_DIAGNOSIS",
    "PAPER_SEGMENTATION",
    "PAPER_TABLE2_COMPLEXITY",
    "PHANTOM_FORMATS",
    "PHANTOM_MIN_SIZE",
    "PHANTOM_POSITIVE_FRACTION",
    "PHANTOM_SPACING_MM",
    "PHANTOM_STYLES",
    "PHANTOM_STYLE_VERSIONS",
    "PHANTOM_VERSION",
    "PTX_CLASS",
    "SCSE_FUSION",
    "SCSE_PLACEMENT",
    "SCSE_REDUCTION",
    "SEARCH_MASK_THRESHOLDS",
    "SEARCH_MIN_AREAS",
    "SEGNET_BASE_FILTERS",
    "SHARD_SIZE",
    "SHUFFLE_BUFFER",
    "SIGNIFICANCE_LEVEL",
    "SIIM_SIZE",
    "SPLITS",
    "SPLIT_FRACTIONS",
    "SPLIT_SEED",
    "TTA_MODES",
    "UNCERTAINTY_METHODS",
    "UNET_BASE_FILTERS",
    "UNET_BATCH_NORM",
    "UNET_DEPTH",
    "WEIGHT_CLIP",
    "WEIGHT_DECAY",
    "WEIGHT_DECAY_MODE",
    "WEIGHT_DECAY_MODES",
    "WEIGHT_DTYPE",
    "WEIGHT_NORMALIZE",
]


# --- Task -------------------------------------------------------------------------------------------
NUM_CLASSES = 2  # background, pneumothorax
PTX_CLASS = 1  # index of the pneumothorax class in the softmax output

# --- Diagnosis (paper: "the threshold is empirically set to 50 pixels") ------------------------------
DIAGNOSIS_MIN_AREA = 50  # pixels, expressed at REFERENCE_SIZE x REFERENCE_SIZE
DIAGNOSIS_REFERENCE_SIZE = 256
# The diagnosis scores of Table 3, in the order tables list them.
DIAGNOSIS_KEYS = ("accuracy", "sensitivity", "specificity", "ppv", "npv", "f1")
MASK_THRESHOLD = 0.5

# --- Spatial weight maps (eq. 6) ----------------------------------------------------------------------
BOUNDARY_WIDTH = 1  # dilation steps of the cross structuring element
WEIGHT_NORMALIZE = None  # None or "mean"
WEIGHT_CLIP = None  # None or a positive float

# --- Data -------------------------------------------------------------------------------------------
IMAGE_SIZE = 256
SPLIT_FRACTIONS = (0.64, 0.16, 0.20)  # train / validation / test (Table 1)
SPLITS = ("train", "val", "test")
SPLIT_SEED = 1234
SHARD_SIZE = 256  # examples per TFRecord shard
WEIGHT_DTYPE = "float32"  # exact; "float16" clamps at 65,504 (small pneumothoraces above 256 px): an opt-in
IMAGE_BIT_DEPTH = 8
SIIM_SIZE = 1024  # SIIM-ACR masks are 1024 x 1024
RUNS_DIR = "runs"  # the default parent of run directories (config `output_dir`, experiments, ptx-predict's search)
# The largest image (rows x columns x samples per pixel x frames) any reader decodes: checked from the file's header
# before decoding (docs/data.md), so a "decompression bomb" (a small file claiming a huge image) costs nothing. 100
# megapixels is over five times a 4300 x 4300 detector radiograph; `data.max_image_pixels` / `--max-image-pixels`
# change it.
MAX_IMAGE_PIXELS = 10000 * 10000
# How long a multi-worker run waits for every peer to answer at start-up, and a collective operation for every
# peer to join it, before stopping with an error naming the peers (`train.worker_timeout_s`, docs/scaling.md).
WORKER_TIMEOUT_S = 600.0

# --- Training (paper, Methods / Implementation) --------------------------------------------------------
LEARNING_RATE = 1e-4
BETA_1 = 0.9
BETA_2 = 0.999
WEIGHT_DECAY = 1e-4
# "coupled": L2 added to the gradient before Adam's moments (PyTorch Adam(weight_decay=...), the paper's era);
# "decoupled": Keras' AdamW, a per-step shrink of lr * wd (1e-8 at the paper's values: a float32 no-op).
WEIGHT_DECAY_MODE = "coupled"
WEIGHT_DECAY_MODES = ("coupled", "decoupled")
EPOCHS = 200
EARLY_STOPPING_PATIENCE = 20
DROPOUT_RATE = 0.2

# --- FC-DenseNet103 (Jegou et al. 2017, paper Table 4) -------------------------------------------------
FCDENSENET103_LAYERS = (4, 5, 7, 10, 12, 15, 12, 10, 7, 5, 4)
FCDENSENET67_LAYERS = 5
FCDENSENET56_LAYERS = 4
GROWTH_RATE = 12
FIRST_CONV_FILTERS = 48
MULTISCALE_FILTERS_PER_BRANCH = 16
MULTISCALE_KERNEL_SIZES = (3, 5, 7)
SCSE_REDUCTION = 2

# --- U-Net -------------------------------------------------------------------------------------------
UNET_BASE_FILTERS = 32
UNET_DEPTH = 4

# --- Statistics --------------------------------------------------------------------------------------
SIGNIFICANCE_LEVEL = 0.05

# --- Data preparation and the tf.data pipeline -----------------------------------------------------------
SHUFFLE_BUFFER = 512  # examples held by the training shuffle buffer (serialized, about 100-300 KB each)
# With training crops (data.crop_size): the share of crops centred on a pneumothorax pixel (nnU-Net's
# oversample_foreground_percent, 0.33); the rest are placed uniformly.
CROP_FOREGROUND = 0.33

# --- Losses (ptx_keras.losses) ---------------------------------------------------------------------------
LOSS_EPSILON = 1e-7  # probabilities are clipped to [eps, 1 - eps] before the log (as keras.backend.epsilon())
DICE_SMOOTH = 1.0  # added to the soft Dice numerator and denominator: empty truth + empty prediction -> loss 0

# --- Comparison baselines (paper Table 2; ptx_keras.models.segnet / deeplab / denseaspp) -----------------
SEGNET_BASE_FILTERS = 64  # VGG16 widths 64, 128, 256, 512, 512
DEEPLAB_BACKBONE = "resnet101"
DEEPLAB_OUTPUT_STRIDE = 16
DEEPLAB_ASPP_RATES = (6, 12, 18)  # at output stride 16; doubled at output stride 8 (Chen et al. 2018)
DEEPLAB_ASPP_FILTERS = 256
DEEPLAB_LOW_LEVEL_FILTERS = 48
DEEPLAB_DROPOUT_RATES = (0.5, 0.1)  # after the ASPP projection / decoder convs (as jfzhang95's reference code)
DENSEASPP_BACKBONE = "densenet161"
DENSEASPP_RATES = (3, 6, 12, 18, 24)
DENSEASPP_OUTPUT_STRIDE = 8
DENSEASPP_DROPOUT_RATE = 0.1

# --- Model family details (appended by the models issue) ------------------------------------------------
FCDENSENET_NUM_POOLS = 5
FCDENSENET67_GROWTH_RATE = 16  # Jegou et al.'s FC-DenseNet67
UNET_BATCH_NORM = True  # BN after every U-Net conv: 7,766,018 trainable params vs the paper's 7,764,098
SCSE_PLACEMENT = "per_layer"  # on the new maps of every dense layer; alternative "per_block"
SCSE_FUSION = "add"  # eq. 2; alternative "max" (Roy et al.'s code)

# Paper Table 2: (parameters, "GFLOPS") per compared method, keyed by the paper's method name.
PAPER_TABLE2_COMPLEXITY = {
    "U-Net": (7_764_098, 11.59),
    "SegNet": (29_444_162, 40.14),
    "DeepLab v3+": (59_351_458, 61.07),
    "DenseASPP": (35_365_762, 39.11),
    "FC-DenseNet": (5_415_278, 15.39),
    "MS_scSE_U-Net": (8_204_011, 11.6),
    "MS_scSE_FC-DenseNet": (5_989_096, 15.59),
}

# --- Diagnosis threshold search on the validation split (ptx_keras.diagnosis.search_thresholds) ----------
SEARCH_MASK_THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.98)
SEARCH_MIN_AREAS = (0, 10, 20, 30, 50, 75, 100, 150, 200, 300, 500)  # pixels at DIAGNOSIS_REFERENCE_SIZE

# --- Model and serving output names (one pair per interface; ptx_keras.inference reads both) ------------------
MASK_OUTPUT = "mask"  # a Keras model with an aux head returns {MASK_OUTPUT: softmax, AUX_OUTPUT: (batch, 1)}
AUX_OUTPUT = "aux"  # (ptx_keras.models.common.segmentation_outputs)
PROBABILITIES_OUTPUT = "probabilities"  # the serving graph's softmax (ptx_keras.serving.model_function) and the
AUX_PROBABILITY_OUTPUT = "aux_probability"  # (batch,) image-level probability: the export's public names

# --- Test-time augmentation (ptx_keras.inference, ptx_keras.serving.model_function; evaluation.tta) --------
TTA_MODES = ("none", "hflip")  # hflip: mean of the model on the image and (mirrored back) on its mirror
UNCERTAINTY_METHODS = ("mc_dropout", "tta")  # ptx-predict --uncertainty (ptx_keras.inference.ModelRunner.sample)
SAVEDMODEL_FORMAT = "savedmodel"  # the one name of the SavedModel format (--format, export.json, predict's summary)
EXPORT_FORMATS = (SAVEDMODEL_FORMAT, "onnx", "litert")  # ptx-export --format (ptx_keras.artifacts, ptx_keras.export)
EXPORT_FORMAT_NAMES = {SAVEDMODEL_FORMAT: "SavedModel", "onnx": "ONNX", "litert": "LiteRT"}  # in messages

# --- Synthetic phantoms (ptx_keras.data.phantoms) ---------------------------------------------------------
PHANTOM_VERSION = 1  # the classic style's version: bump when its output changes (phantoms.json records it)
PHANTOM_STYLES = ("classic", "varied", "heldout")  # one look / the randomised training mix / its held-out twin
PHANTOM_STYLE_VERSIONS = {"classic": PHANTOM_VERSION, "varied": 1, "heldout": 1}  # bump a style's own on change
PHANTOM_MIN_SIZE = 32  # smallest image side the generator renders
PHANTOM_POSITIVE_FRACTION = 0.5
PHANTOM_SPACING_MM = 0.14  # pixel spacing at SIIM_SIZE (SIIM-ACR radiographs are about 0.14 mm/pixel)
PHANTOM_FORMATS = ("png", "csv", "siim")

# --- The paper's results for MS_scSE_FC-DenseNet (Tables 2-3, test set), shown beside ours --------------------
PAPER_SEGMENTATION = {"mpa": (0.93, 0.13), "pa1": (0.86, 0.27), "dsc": (0.92, 0.14), "dsc1": (0.84, 0.27)}
PAPER_DIAGNOSIS = {
    "accuracy": 0.9345,
    "sensitivity": 0.8855,
    "specificity": 0.9814,
    "ppv": 0.9786,
    "npv": 0.8994,
    "f1": 0.9297,
}
EVAL_CASES_PER_SIZE = 3  # best, median, worst
