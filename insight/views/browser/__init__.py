"""A static concept browser (paper Fig. 1, 3, C1-C9), opened from disk with no server and
no network: ``index.html``, one page per concept, one page per image, and ``assets/``.
The pages are Jinja2 templates (``insight/views/templates``); every value is escaped.
Five modules: ``queries`` (what is shown, read with DuckDB), ``examples`` (each
concept's top and quantile-band images, shard by shard), ``thumbnails`` (the cached
pictures), ``pages`` (the HTML and SVG) and ``build`` (all of them from a run's files).

- The index lists the concepts (thumbnail, id, name, Matryoshka group, frequency, naming
  score, parents, children). Concepts that never fire are hidden until "show" is ticked;
  a search box matches names and ids; every column sorts. A name shared by several
  concepts is shown with the concept's id (``sand #212``).
- A concept page: the name, runner-up names with their scores, a histogram of its
  activations, its top-activating images and images from lower ranges of its activations
  (around the 25%, 50% and 75% ranks, Neuronpedia style) with the heatmap drawn on each
  and a colour scale, its parents and children with their confidences, and the family
  around it as an SVG with arrows (``+N more`` where a row is cut).
- An image page (PatchSAE style): the image as the encoder saw it with its patch grid;
  clicking a patch lists the concepts active there with their activations (the values of
  the concept shards) and draws a concept's heatmap; the image's top concepts with their
  share of its total activation.
- Thumbnails are JPEG files in a cache folder keyed by the image, the concept and the
  activations, so a rebuild only draws what changed; the browser links (or copies) them.
"""
