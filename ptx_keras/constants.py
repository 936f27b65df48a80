"""The paper's numbers and the package-wide defaults, in one place.

Every default that more than one module needs lives here; configuration dataclasses (`ptx_keras.config`)
and function signatures refer to these names instead of repeating literals.
"""

# --- Task -------------------------------------------------------------------------------------------
NUM_CLASSES = 2  # background, pneumothorax
PTX_CLASS = 1  # index of the pneumothorax class in the softmax output

# --- Diagnosis (paper: "the threshold is empirically set to 50 pixels") ------------------------------
DIAGNOSIS_MIN_AREA = 50  # pixels, expressed at REFERENCE_SIZE x REFERENCE_SIZE
DIAGNOSIS_REFERENCE_SIZE = 256
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
WEIGHT_DTYPE = "float16"
IMAGE_BIT_DEPTH = 8
SIIM_SIZE = 1024  # SIIM-ACR masks are 1024 x 1024

# --- Training (paper, Methods / Implementation) --------------------------------------------------------
LEARNING_RATE = 1e-4
BETA_1 = 0.9
BETA_2 = 0.999
WEIGHT_DECAY = 1e-4
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

# --- Losses (ptx_keras.losses) ---------------------------------------------------------------------------
LOSS_EPSILON = 1e-7  # probabilities are clipped to [eps, 1 - eps] before the log (as keras.backend.epsilon())
DICE_SMOOTH = 1.0  # added to the soft Dice numerator and denominator: empty truth + empty prediction -> loss 0
