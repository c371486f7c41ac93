package event

// ValidID exposes the id check to the test that holds it to the schema's pattern.
var ValidID = validID
