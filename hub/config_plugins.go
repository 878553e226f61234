package hub

// PluginConfig is one [[plugin]] declaration: a Wasm plugin deployed at
// start. Owned by plugins.
type PluginConfig struct{}

// Validate reports every problem in one [[plugin]] element.
func (c PluginConfig) Validate() error { return nil }

// WebhookConfig is one [[webhook]] declaration: a stream delivered to an
// HTTP endpoint. Owned by plugins.
type WebhookConfig struct{}

// Validate reports every problem in one [[webhook]] element.
func (c WebhookConfig) Validate() error { return nil }
