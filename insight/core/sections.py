"""The workflow config's sections as frozen dataclasses, one per section.

Fields carry no defaults: the schema (``workflow/schemas/config.schema.yaml``) holds the
only ones, filled in by :func:`insight.core.settings.settings_from_config`, and a test
compares these fields with the schema's keys. Lists become tuples; free-form mappings
(datasets by name, steering targets) stay dicts.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BackboneSettings:
    """The CLIP model (Sec. 3.1); any open_clip ViT."""

    model: str
    pretrained: str | None
    checkpoint: str | None
    cache_dir: str | None


@dataclass(frozen=True)
class ClipTrainingSettings:
    """Contrastive training of backbone.model from scratch (the offline demo); off unless pairs is set."""

    pairs: str | None
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    warmup_steps: int
    seed: int
    noise_words: int
    noise_per_caption: int
    elsewhere_images: int
    region_weight: float


@dataclass(frozen=True)
class ImagesSettings:
    """How images are read and cut into shards (Sec. 3.1)."""

    per_shard: int
    max_pixels: int
    convert_modes: bool


@dataclass(frozen=True)
class TeacherSettings:
    """The DINO teacher whose affinities train the DINOiser (Eq. B.2)."""

    model: str
    pretrained: bool
    checkpoint: str | None
    features: str
    overrides: dict


@dataclass(frozen=True)
class DinoiserSettings:
    """The 3x3 conv g and guided pooling (Eq. 1-2, App. B.1)."""

    enabled: bool
    head: str
    checkpoint: str | None
    checkpoint_backbone: str
    dataset: str | None
    images: int
    epochs: int
    lr: float
    batch_size: int
    d_out: int
    gamma: float
    teacher_threshold: float
    seed: int
    recipe: str
    crop_size: int
    lr_step_at: int
    lr_step_factor: float
    teacher: TeacherSettings


@dataclass(frozen=True)
class FeaturesSettings:
    """Extract_features settings."""

    batch_size: int
    precision: str
    storage: str
    row_group_images: int
    decode_threads: int
    threads: int


@dataclass(frozen=True)
class SAESettings:
    """The Matryoshka BatchTopK SAE (Sec. 3.2, App. B.2)."""

    checkpoint: str | None
    d_sae: int
    k: int
    group_ratios: tuple[float, ...]
    groups: tuple[int, ...] | None
    k_aux: int
    aux_coefficient: float
    dead_after: int
    threshold_momentum: float
    threshold_start_step: int
    aux_activation: str
    b_dec_init: str
    grad_clip: float | None
    lr: float
    batch_size: int
    epochs: int
    max_steps: int | None
    seed: int
    holdout_fraction: float
    shuffle_buffer: int
    batch_images: int | None
    checkpoint_every: int
    encode_chunk: int
    inference_threshold: str
    threshold_calibration_rows: int
    calibration_fraction: float


@dataclass(frozen=True)
class HierarchySettings:
    """Co-occurrence matrix D and the family DAG (Sec. 3.3, App. B.3)."""

    dataset: str | None
    criterion: str
    threshold: float
    lift: float
    z: float
    dense_coverage: float
    floor: float
    min_activation: float
    shards_per_partial: int
    concept_blocks: int


@dataclass(frozen=True)
class ConcretenessSettings:
    """The concreteness filter of the vocabulary (App. B.4)."""

    enabled: bool
    path: str | None
    brysbaert_min: float
    muraki_min: float


@dataclass(frozen=True)
class VocabularySettings:
    """Naming vocabulary and its text embeddings (App. B.4)."""

    wordfreq_top: int
    concreteness: ConcretenessSettings
    word_lists: tuple[str, ...]
    laion: tuple[str, ...]
    embeddings: str | None
    templates: str
    index: str
    batch_size: int
    precision: str


@dataclass(frozen=True)
class NamingSettings:
    """Concept naming (Sec. 3.4, Eq. 6 / B.9-B.13)."""

    method: str
    alpha: float
    parents: str
    top_patches: int
    patch_divisor: str
    runner_up: int


@dataclass(frozen=True)
class OVSSettings:
    """Open-vocabulary segmentation benchmark (Sec. 4.4)."""

    datasets: dict
    custom: dict
    background: str
    background_threshold: float
    found_confidence: float
    found_foreground: float
    found_at: str
    window_scores: str
    class_names: str
    short_side: int | str
    long_max: int
    window: int
    stride: int
    logit_scale: float
    max_images: int | None
    save_predictions: bool
    explain_images: int
    explanation: str


@dataclass(frozen=True)
class InterpretabilitySettings:
    """Locality, Consistency, Impurity on part-annotated data (App. A.1)."""

    datasets: dict
    split: str
    min_images: dict
    max_images: int | None


@dataclass(frozen=True)
class ClassificationSettings:
    """Sparse linear probes on image-level concepts (App. B.5)."""

    datasets: dict
    train_split: str
    test_split: str
    images_per_class: int | None
    class_names: str
    batch_sizes: tuple[int, ...]
    lrs: tuple[float, ...]
    l1s: tuple[float, ...]
    l1_scale: str
    pooling: str
    bias: bool
    epochs: int
    holdout_fraction: float
    refit: bool
    explain_images: int


@dataclass(frozen=True)
class SteeringSettings:
    """Results/captioning/steering.json: scale the concepts named for each target word on the test images whose references mention it."""

    targets: dict
    with_family: bool
    factor: float
    control_draws: int


@dataclass(frozen=True)
class CaptioningSettings:
    """ClipCap-style captioning through the concept bottleneck (Sec. 4.3, App. B.6)."""

    split_file: str | None
    images_root: str | None
    language_model: str
    threads: int
    images: dict
    queries: int
    adapter_layers: int
    adapter_heads: int
    lr: float
    batch_size: int
    epochs: int
    warmup_steps: int
    max_length: int
    max_new_tokens: int
    seed: int
    steering: SteeringSettings


@dataclass(frozen=True)
class BrowserSettings:
    """The static concept browser (results/browser/index.html; Fig. 1, 3)."""

    enabled: bool
    dataset: str | None
    images_per_concept: int
    thumbnail_size: int
    images_per_band: int
    band_sample: int
    image_pages: int


@dataclass(frozen=True)
class ResourcesSettings:
    """Snakemake resources the model rules declare (used by cluster profiles)."""

    gpus: int
    mem_mb_train_sae: int
    mem_mb_cooccurrence: int


@dataclass(frozen=True)
class DemoSettings:
    """Generated data of the offline demo."""

    images: int
    voc_images: int
    part_images: int
    classification_images: int
    bad_images: bool
    clip_scenes: int
    caption_images: dict
    language_model: dict
    seed: int


@dataclass(frozen=True)
class Settings:
    """The whole validated config: the library's typed settings."""

    device: str
    backbone: BackboneSettings
    clip_training: ClipTrainingSettings
    datasets: dict
    train_dataset: str
    encode_datasets: tuple[str, ...]
    images: ImagesSettings
    dinoiser: DinoiserSettings
    features: FeaturesSettings
    sae: SAESettings
    hierarchy: HierarchySettings
    vocabulary: VocabularySettings
    naming: NamingSettings
    ovs: OVSSettings
    interpretability: InterpretabilitySettings
    classification: ClassificationSettings
    captioning: CaptioningSettings
    browser: BrowserSettings
    resources: ResourcesSettings
    variants: dict
    demo: DemoSettings
