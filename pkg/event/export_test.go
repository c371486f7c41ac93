package event

// CheckStrict exposes the strict JSON checker to the black-box fuzz tests.
var CheckStrict = checkStrict
