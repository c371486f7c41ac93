package event

// CheckStrict exposes the strict JSON checker to the black-box fuzz tests.
var CheckStrict = checkStrict

// ValidID exposes the id check to the test that holds it to the schema's pattern.
var ValidID = validID
