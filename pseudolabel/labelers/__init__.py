"""One module per labeler. The registry (pseudolabel.registry) imports them lazily by path."""
