//go:build tools

// Keeps skaffold's command in this module's requirements: .ci/install-k8s builds
// github.com/GoogleContainerTools/skaffold/v2/cmd/skaffold from here.
package tools

import _ "github.com/GoogleContainerTools/skaffold/v2/cmd/skaffold/app"
