"""Topic names the node uses besides its per-camera outputs (see ``render.output_topic``)."""

# Relative: in the node's namespace. Transient local, so late subscribers get it too.
CLASS_INFO_TOPIC = "segmentation/class_info"
DIAGNOSTICS_TOPIC = "/diagnostics"
