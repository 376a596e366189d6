module github.com/helixml/helix/api

go 1.25.4

require (
	github.com/gorilla/websocket v1.5.3
	github.com/joho/godotenv v1.5.1
	github.com/spf13/cobra v1.10.2
)
