import FedBatchCLI

FedBatchCommand.main()
