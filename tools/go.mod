module refonte.ai/callbacks/tools

go 1.26.0
