module refonte.ai/callbacks/services/gateway

go 1.26.0

require refonte.ai/callbacks v0.0.0

replace refonte.ai/callbacks => ../..
