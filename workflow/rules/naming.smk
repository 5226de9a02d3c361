rule vocabulary:
    """The union of the configured term sources, with each term's sources (App. B.4)."""
    input:
        lists=config["vocabulary"]["word_lists"] + config["vocabulary"]["laion"],
    output:
        RUN.terms,
    log:
        "logs/vocabulary.log",
    conda:
        ENV
    params:
        settings=settings_of(
            "vocabulary.wordfreq_top",
            "vocabulary.concreteness",
            "vocabulary.word_lists",
            "vocabulary.laion",
        ),
        code=script_version("vocabulary"),
    script:
        "../scripts/vocabulary.py"


rule embed_vocabulary:
    """Template-averaged text embeddings per part of speech (Eq. B.11) and a FAISS index."""
    input:
        weights=backbone_weights,
        terms=RUN.terms,
        given=user_embeddings,
        templates=template_file,
    output:
        embeddings=RUN.embeddings,
        index=RUN.vocabulary_index,
    log:
        "logs/embed_vocabulary.log",
    conda:
        ENV
    threads: 2
    resources:
        gpu=config["resources"]["gpus"],
    params:
        settings=settings_of(
            "backbone",
            "vocabulary.embeddings",
            "vocabulary.templates",
            "vocabulary.index",
            "vocabulary.precision",
        ),
        code=script_version("embed_vocabulary"),
    script:
        "../scripts/embed_vocabulary.py"


rule name_concepts:
    """Name every concept: Eq. B.9 with its parents (hierarchy), Eq. 6 (decoder) or the release's vector (release)."""
    input:
        sae=lambda wc: upstream("sae", wc).sae_weights,
        families=lambda wc: upstream("hierarchy", wc).families,
        cooccurrence=lambda wc: upstream("hierarchy", wc).cooccurrence,
        totals=lambda wc: upstream("hierarchy", wc).totals,
        imported=imported_names,
        concepts=lambda wc: concept_shards(
            hierarchy_dataset(), upstream("concepts", wc)
        ),
        embeddings=RUN.embeddings,
        index=RUN.vocabulary_index,
    output:
        OUT.names,
    log:
        "logs{variant}/name_concepts.log",
    conda:
        ENV
    threads: 2
    params:
        settings=settings_of("naming", "hierarchy.threshold"),
        code=script_version("name_concepts"),
    script:
        "../scripts/name_concepts.py"
