//go:build tools

// Keeps KEDA's commands in this module's requirements: .ci/install-k8s builds
// github.com/kedacore/keda/v2/cmd/operator and cmd/adapter from here.
package tools

import (
	_ "github.com/kedacore/keda/v2/cmd/adapter"
	_ "github.com/kedacore/keda/v2/cmd/operator"
)
