// Package stricttoml decodes a TOML document into a Go struct strictly and
// reports every problem at once, each with its line and dotted key.
//
// # Basics
//
// Parse reads the document (a syntax error is the only problem it returns,
// with its line); Doc.Decode then walks the destination struct by its `toml`
// tags and decodes key by key, so one bad value does not hide the next. An
// unknown key or table is a problem naming the closest known key of the same
// table ("did you mean"); a value of the wrong type, or one that a field's
// toml.Unmarshaler refuses, is a problem naming its key. Doc.Line finds the
// line of any key path, so a caller can locate problems found later (such as
// validation) in the same document.
//
// Keys are named as dotted paths with the element index of arrays of tables:
// "hub.name", "stream[1].shards".
//
// # Caveats
//
// The TOML decoder (BurntSushi/toml) gives no position for unknown keys or
// for keys in arrays of tables, so the document is also scanned line by line
// for table headers and keys. The scanner follows strings, multi-line strings
// and multi-line arrays well enough not to mistake their contents for keys;
// it does not detect errors, because the document has already been parsed.
//
// A struct field is walked key by key unless its type implements
// toml.Unmarshaler or encoding.TextUnmarshaler, in which case it is decoded
// in one piece; a slice of structs must be an array of tables.
package stricttoml
